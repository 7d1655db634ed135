from constitutional_guard.cli.app import main

main()
