"""Renderings of registry facts (markdown, terminal, JUnit, MLflow texts and tags). Pure: no
database, no MLflow, no model; each fact is rendered from one object."""
