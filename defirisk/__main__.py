from defirisk.cli import main

main()
