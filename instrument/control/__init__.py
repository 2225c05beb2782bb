"""Control: everything that turns performer input into :mod:`instrument.control.commands`."""
