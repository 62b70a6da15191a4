from splitc.cli import main

raise SystemExit(main())
