"""Shared UI pieces for the pages: helpers (common), Plotly builders (charts), launch-form mapping (launch_form)."""
