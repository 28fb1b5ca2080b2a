"""edgedepth.train"""
