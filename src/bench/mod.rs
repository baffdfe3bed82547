//! Benchmark machinery shared by `tunnelbed bench` subcommands.
