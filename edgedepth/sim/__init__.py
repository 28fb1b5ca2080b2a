"""edgedepth.sim"""
