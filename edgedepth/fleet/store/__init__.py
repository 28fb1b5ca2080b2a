"""edgedepth.fleet.store"""
