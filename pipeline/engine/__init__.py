"""The job engine: config -> plan -> read (``sources``) -> decode -> explain -> finish -> score
-> write (``sink``, ``write``), and the run manifest; ``run.run_job`` chains the stages."""
