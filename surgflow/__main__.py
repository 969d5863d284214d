from surgflow.cli import main

raise SystemExit(main())
