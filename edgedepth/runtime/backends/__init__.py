"""edgedepth.runtime.backends"""
