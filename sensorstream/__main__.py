from sensorstream.cli import main

raise SystemExit(main())
