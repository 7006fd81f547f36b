"""Generated code for the opentier.intelligence contract. Do not edit."""
