#!/bin/sh
# Most generic: any instance of context b.
echo "init for context $BOOTLACE_CONTEXT"
