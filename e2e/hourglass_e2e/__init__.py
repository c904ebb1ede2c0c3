"""The e2e runner: the deployed shape on one machine and the scenarios of issue 22 (README, "End to end")."""
