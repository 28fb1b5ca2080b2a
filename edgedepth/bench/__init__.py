"""edgedepth.bench"""
