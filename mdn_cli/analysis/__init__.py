"""What is done with trained runs and stored features: evaluate, extract, audit, refit, residualize, report, layers, pack."""
