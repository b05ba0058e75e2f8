from fieldsym.cli import main

raise SystemExit(main())
