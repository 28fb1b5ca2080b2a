"""edgedepth.registry"""
