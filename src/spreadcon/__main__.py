from spreadcon.cli import main

raise SystemExit(main())
