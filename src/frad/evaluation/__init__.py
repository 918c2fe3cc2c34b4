"""Metrics, tables and figures: ROC/AUC/EER, the paper's tables, FR scenarios."""
