"""edgedepth.data"""
