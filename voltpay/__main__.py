from voltpay.daemon.cli import main

raise SystemExit(main())
