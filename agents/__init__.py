"""agents: deep RL agents and language-model learners built on the mdvi core."""
