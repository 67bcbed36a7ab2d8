from otpfast_cli.main import cli

cli(prog_name="otpfast")
