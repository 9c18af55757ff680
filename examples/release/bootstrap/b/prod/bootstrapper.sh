#!/bin/sh
# Every other instance of context b in environment prod.
echo "init for $BOOTLACE_ROLE in context $BOOTLACE_CONTEXT, environment $BOOTLACE_ENVIRONMENT"
