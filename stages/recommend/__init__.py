"""recommend: rules over results and profiles into prioritised, evidenced recommendations."""
