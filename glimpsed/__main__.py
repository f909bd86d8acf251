from glimpsed.cli import main

main()
