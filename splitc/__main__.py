from splitc.cli.main import main

raise SystemExit(main())
