"""Payment providers behind one small interface (DESIGN.md "Payments")."""
