"""newsflow stages: one module per stage, each a pure core plus its Faust agent."""
