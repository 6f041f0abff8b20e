"""Identity layer: ID normalization, hashed forms, ID-mapping (OneID), the bucket function."""
