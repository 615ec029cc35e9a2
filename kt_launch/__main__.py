from kt_launch.cli import main

raise SystemExit(main())
