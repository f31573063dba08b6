from cco.cli import cco_main

cco_main()
