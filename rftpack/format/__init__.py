"""The archive's JSON documents: manifest, tensor containers, predictor; schemas; version 1."""
