from surestep.cli import main

main()
