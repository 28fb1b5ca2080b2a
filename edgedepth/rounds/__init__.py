"""edgedepth.rounds"""
