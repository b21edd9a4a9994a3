from l2bt.cli import main

raise SystemExit(main())
