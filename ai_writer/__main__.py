from ai_writer.cli.main import main

main()
