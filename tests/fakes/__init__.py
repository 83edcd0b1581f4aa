"""Fakes of outside services (model servers), real servers on 127.0.0.1."""
