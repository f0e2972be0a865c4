"""Pipeline stages: the abstract kinds (``base``) and one module per built-in stage id."""
