"""experiments: the mdvi-lab command line, experiment configs, results and plots."""
