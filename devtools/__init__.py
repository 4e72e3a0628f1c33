"""Tools for developing and testing the platform, not part of it: throwaway servers on
loopback (`servers`) and independently written bot designs (`foreign_bots`) that the tests
and the benchmarks share. Nothing here installs software: `make test-tools` and scripts/ do."""
