from edgedepth.cli.main import main

main()
