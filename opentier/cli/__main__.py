from opentier.cli import main

main()
