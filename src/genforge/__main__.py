from genforge.cli import main

raise SystemExit(main())
