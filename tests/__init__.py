"""xnatio's test suite (a package, so that every helper module has one name)."""
