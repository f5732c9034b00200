# prints "gone" once the grandchild recorded in gc.pid has died (zombies count as dead), "alive" after 3 s
pid=$(cat gc.pid)
for i in $(seq 30); do
  state=$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)
  if [ -z "$state" ] || [ "$state" = Z ]; then echo '"gone"'; exit 0; fi
  sleep 0.1
done
echo '"alive"'
