"""The Beam adapter: each step of the data flow as a Beam transform, and the
whole cascade as one RunInference model handler."""
