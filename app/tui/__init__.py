"""The Textual TUI: the app, its screens, widgets and styles. Importing this package is cheap;
textual loads when app.tui.app is imported."""
