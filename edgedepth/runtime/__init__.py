"""edgedepth.runtime"""
