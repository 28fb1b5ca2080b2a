"""edgedepth.fleet"""
