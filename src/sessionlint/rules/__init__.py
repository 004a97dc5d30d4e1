"""One module per rule, named after the rule; `registry` lists them."""
