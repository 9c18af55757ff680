#!/bin/sh
# Most specific: only the instance i-0123456789abcdef0 in context b, environment prod.
echo "init for machine $BOOTLACE_MACHINE_ID ($BOOTLACE_ROLE in $BOOTLACE_ENVIRONMENT, context $BOOTLACE_CONTEXT)"
echo "release $BOOTLACE_TAG at $BOOTLACE_RELEASE_DIR"
cat "$BOOTLACE_RELEASE_DIR/app/hello.txt"
