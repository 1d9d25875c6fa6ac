"""One blueprint per audience: public, customer pages, the JSON API (cashier and manager pages follow)."""
