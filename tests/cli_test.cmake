# End-to-end run of the CLI on the LeNet fixture: success writes every output,
# bad input fails with a message and leaves no output folder.
file(REMOVE_RECURSE ${OUT})
set(M ${FIX}/lenet)
execute_process(COMMAND ${EXE} attribute --model ${M}/model.onnx --split split --input ${M}/x.npy --baseline zeros
                        --class 5 --box 7 9 16 26 -n 32 -p 10 --precision f64 -o ${OUT}/run
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "attribute failed (${rc}): ${out} ${err}")
endif()
foreach(f report.json ig.npy conductance.npy ipna.npy ig_pruned.npy prune_mask.npy)
  if(NOT EXISTS ${OUT}/run/${f})
    message(FATAL_ERROR "missing ${f}")
  endif()
endforeach()
file(READ ${OUT}/run/report.json rep)
string(JSON fx GET ${rep} confidence)
string(JSON inside GET ${rep} boxes 0 ig_inside)
string(JSON outside GET ${rep} boxes 0 ig_outside)
string(JSON total GET ${rep} ig sum)
math(EXPR dummy "0")
message(STATUS "F(x)=${fx} inside=${inside} outside=${outside} total=${total}")

# The two-file form gives the same report numbers.
execute_process(COMMAND ${EXE} attribute --model ${M}/first.onnx ${M}/second.onnx --input ${M}/x.npy --baseline zeros
                        --class 5 --box 7 9 16 26 -n 32 -p 10 --precision f64 -o ${OUT}/run2 --json
                RESULT_VARIABLE rc OUTPUT_VARIABLE out2 ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "two-part attribute failed: ${err}")
endif()
string(JSON total2 GET ${out2} ig sum)
if(NOT total STREQUAL total2)
  message(FATAL_ERROR "two-part form differs: ${total} vs ${total2}")
endif()

# `attribute` on the LeNet fixture (class 5, zeros baseline, float64) with ARGN, its --json report into `var`,
# its outputs into ${OUT}/name; a failure fails the test.
function(attribute_json var name)
  execute_process(COMMAND ${EXE} attribute --model ${M}/model.onnx --split split --input ${M}/x.npy --baseline zeros
                          --class 5 --precision f64 -o ${OUT}/${name} --json ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE json ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "attribute ${ARGN} failed (${rc}): ${err}")
  endif()
  set(${var} "${json}" PARENT_SCOPE)
endfunction()

# -n auto: step control to a tolerance, on an adaptive schedule, reported.
attribute_json(auto_out auto --box 7 9 16 26 -n auto --schedule adaptive --tol 0.05)
string(JSON converged GET ${auto_out} step_control converged)
string(JSON auto_steps GET ${auto_out} steps)
string(JSON levels LENGTH ${auto_out} step_control levels)
string(JSON auto_gap GET ${auto_out} ig completeness_gap)
string(JSON auto_fx GET ${auto_out} confidence)
string(JSON auto_fx0 GET ${auto_out} F_baseline)
if(NOT converged OR auto_steps LESS 32 OR levels LESS 2)
  message(FATAL_ERROR "-n auto: converged=${converged} steps=${auto_steps} levels=${levels}")
endif()
# The second step count (32) evaluates only its 16 new points and reuses the first's 16.
string(JSON reused1 GET ${auto_out} step_control levels 1 reused)
string(JSON evals1 GET ${auto_out} step_control levels 1 evaluations)
if(NOT reused1 EQUAL 16 OR NOT evals1 EQUAL 16)
  message(FATAL_ERROR "-n auto: the second step count reused ${reused1} points and evaluated ${evals1}, expected 16 and 16")
endif()
message(STATUS "-n auto: ${auto_steps} steps over ${levels} step counts, IG gap ${auto_gap} (F ${auto_fx0} -> ${auto_fx})")

# --schedule gradient: a pilot of 33 gradient evaluations, reported; a path other than uniform steps.
attribute_json(grad_out gradient -n 16 --schedule gradient)
string(JSON grad_schedule GET ${grad_out} step_control schedule)
string(JSON grad_pilot GET ${grad_out} step_control pilot_evaluations)
string(JSON grad_sum GET ${grad_out} ig sum)
attribute_json(uni_out uniform16 -n 16)
string(JSON uni_sum GET ${uni_out} ig sum)
if(NOT grad_schedule STREQUAL "gradient" OR NOT grad_pilot EQUAL 33 OR grad_sum STREQUAL uni_sum)
  message(FATAL_ERROR "--schedule gradient: schedule ${grad_schedule}, pilot ${grad_pilot}, IG sum ${grad_sum} "
                      "(uniform: ${uni_sum})")
endif()

# Without --schedule: uniform steps for a count (above), the gradient schedule for -n auto.
string(JSON uni_schedule GET ${uni_out} step_control schedule)
attribute_json(auto_default auto_default -n auto --tol 0.05)
string(JSON auto_default_schedule GET ${auto_default} step_control schedule)
string(JSON auto_default_pilot GET ${auto_default} step_control pilot_evaluations)
if(NOT uni_schedule STREQUAL "uniform" OR NOT auto_default_schedule STREQUAL "gradient" OR NOT auto_default_pilot EQUAL 33)
  message(FATAL_ERROR "default schedules: -n 16 ${uni_schedule}, -n auto ${auto_default_schedule} "
                      "(pilot ${auto_default_pilot}); expected uniform and gradient (33)")
endif()

# --extrapolate: the difference form's IPNA from m / 2 and m, reported, for m gradient evaluations.
attribute_json(extra_out extrapolated --box 7 9 16 26 -n 32 --extrapolate)
attribute_json(plain_out plain32 --box 7 9 16 26 -n 32)
string(JSON extra_from GET ${extra_out} step_control extrapolated_from)
string(JSON extra_evals GET ${extra_out} step_control evaluations)
string(JSON extra_sum GET ${extra_out} boxes 0 ipna_sum)
string(JSON plain_sum GET ${plain_out} boxes 0 ipna_sum)
if(NOT extra_from EQUAL 16 OR NOT extra_evals EQUAL 32 OR extra_sum STREQUAL plain_sum)
  message(FATAL_ERROR "--extrapolate: from ${extra_from} steps, ${extra_evals} evaluations, IPNA sum ${extra_sum} "
                      "(plain: ${plain_sum}); expected 16, 32 and a different sum")
endif()

# --quadrature secant: IG, conductance and the tangent form's box with completeness gaps of rounding, reported;
# the difference form refused.
attribute_json(secant_out secant --box 7 9 16 26 --ipna-form tangent -n 16 --quadrature secant)
string(JSON secant_rule GET ${secant_out} step_control quadrature)
string(JSON secant_evals GET ${secant_out} step_control evaluations)
string(JSON secant_gap GET ${secant_out} ig completeness_gap)
string(JSON secant_box_gap GET ${secant_out} boxes 0 patch_completeness_gap)
string(JSON right_gap GET ${uni_out} ig completeness_gap)
# (F changes by 2e-3 on this fixture: 1e-15 is rounding, the right rule's gap at 16 steps is not)
if(NOT secant_rule STREQUAL "secant" OR NOT secant_evals EQUAL 17 OR NOT secant_gap LESS 1e-15 OR
   NOT secant_gap GREATER -1e-15 OR NOT secant_box_gap LESS 1e-12 OR NOT secant_box_gap GREATER -1e-12 OR
   (right_gap LESS 1e-8 AND right_gap GREATER -1e-8))
  message(FATAL_ERROR "--quadrature secant: rule ${secant_rule}, ${secant_evals} evaluations, IG gap ${secant_gap}, "
                      "box gap ${secant_box_gap} (right rule's IG gap ${right_gap}); expected secant, 17 and rounding")
endif()
execute_process(COMMAND ${EXE} attribute --model ${M}/model.onnx --split split --input ${M}/x.npy --baseline zeros
                        --class 5 --precision f64 -o ${OUT}/secant_difference --box 7 9 16 26 -n 16
                        --quadrature secant RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
string(FIND "${e}" "tangent form only" at)
if(rc EQUAL 0 OR at EQUAL -1 OR EXISTS ${OUT}/secant_difference)
  message(FATAL_ERROR "--quadrature secant with the difference form: rc ${rc}, '${e}'")
endif()

# --box-batch: a 4x4 grid on the VGG fixture, whose inner boxes' cones share their geometry, in fewer patch passes
# (the maps' equality is TangentForm.BoxGroupsOnTheReferenceModelsGiveEveryBoxWhatItGetsAlone's).
foreach(batch 1 4)
  execute_process(COMMAND ${EXE} attribute --model ${FIX}/vgg_avg/model.onnx --split split --input ${FIX}/vgg_avg/x.npy
                          --baseline zeros --class 7 --precision f64 --grid 4x4 -n 8 --box-batch ${batch} --json
                          -o ${OUT}/box_batch${batch}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE json ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "--box-batch ${batch} failed (${rc}): ${err}")
  endif()
  string(JSON passes${batch} GET ${json} patch_passes)
endforeach()
if(NOT passes1 EQUAL 16 OR NOT passes4 LESS 12)
  message(FATAL_ERROR "--box-batch: ${passes1} patch passes one box a pass, ${passes4} in groups of 4; expected 16 "
                      "and fewer than 12")
endif()

function(expect_failure name needle)
  execute_process(COMMAND ${EXE} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(rc EQUAL 0)
    message(FATAL_ERROR "${name}: expected failure, got success")
  endif()
  string(FIND "${o}${e}" "${needle}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${name}: message lacks '${needle}': ${o}${e}")
  endif()
  if(EXISTS ${OUT}/bad)
    message(FATAL_ERROR "${name}: left an output folder behind")
  endif()
endfunction()
set(COMMON --input ${M}/x.npy -o ${OUT}/bad)
expect_failure(missing_model "cannot open model file" attribute --model /nope.onnx --split split --class 1 ${COMMON})
expect_failure(bad_split "Nearest names" attribute --model ${M}/model.onnx --split splitt --class 1 ${COMMON})
expect_failure(bad_class "out of range" attribute --model ${M}/model.onnx --split split --class 10 ${COMMON})
expect_failure(bad_box "box 0" attribute --model ${M}/model.onnx --split split --class 1 --box 0 0 30 5 ${COMMON})
expect_failure(empty_box "box 0" attribute --model ${M}/model.onnx --split split --class 1 --box 3 3 3 5 ${COMMON})
expect_failure(bad_steps "positive count or auto" attribute --model ${M}/model.onnx --split split --class 1 -n 0 ${COMMON})
expect_failure(bad_steps_text "positive count or auto" attribute --model ${M}/model.onnx --split split --class 1 -n 12x ${COMMON})
expect_failure(bad_schedule "--schedule" attribute --model ${M}/model.onnx --split split --class 1 --schedule log ${COMMON})
expect_failure(odd_extrapolate "even count" attribute --model ${M}/model.onnx --split split --class 1 --box 7 9 16 26 -n 33 --extrapolate ${COMMON})
expect_failure(tangent_extrapolate "difference form" attribute --model ${M}/model.onnx --split split --class 1 --box 7 9 16 26 --ipna-form tangent --extrapolate ${COMMON})
expect_failure(bad_box_batch "--box-batch" attribute --model ${M}/model.onnx --split split --class 1 --box-batch -1 ${COMMON})
expect_failure(bad_percent "prune-percent" attribute --model ${M}/model.onnx --split split --class 1 -p 120 ${COMMON})
expect_failure(garbage_input "not a .npy" attribute --model ${M}/model.onnx --split split --class 1 --input ${M}/meta.json -o ${OUT}/bad)
# The original's positional command line gives the same report as `attribute`.
set(T ${FIX}/tiny224)
file(READ ${FIX}/images/files.json files)
string(JSON IMG GET ${files} landscape.png)
execute_process(COMMAND ${EXE} main ${IMG} 3 ${T}/first.onnx ${T}/second.onnx 45 100 90 130 -n 16 -p 5 -o ${OUT}/main
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "main failed: ${err}")
endif()
execute_process(COMMAND ${EXE} attribute --model ${T}/first.onnx ${T}/second.onnx --image ${IMG} --class 3
                        --box 45 100 90 130 -n 16 -p 5 --ranking ipna -o ${OUT}/attr
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "attribute (two-part) failed: ${err}")
endif()
file(READ ${OUT}/main/report.json r1)
file(READ ${OUT}/attr/report.json r2)
foreach(key confidence "ig;sum" "conductance;sum" "boxes;0;ig_inside" "boxes;0;ipna_sum" "pruned;confidence"
            "pruned;ig_sum" "pruned;ig_inside")
  string(JSON v1 GET ${r1} ${key})
  string(JSON v2 GET ${r2} ${key})
  if(NOT v1 STREQUAL v2)
    message(FATAL_ERROR "positional and attribute forms differ in ${key}: ${v1} vs ${v2}")
  endif()
endforeach()
foreach(png figure.png image_box.png ig_overlay_box.png pruned_overlay_box.png)
  if(NOT EXISTS ${OUT}/main/${png})
    message(FATAL_ERROR "main did not write ${png}")
  endif()
endforeach()
expect_failure(not_an_image "not a JPEG or PNG" main ${M}/meta.json 3 ${T}/first.onnx ${T}/second.onnx
               45 100 90 130 -o ${OUT}/bad)
expect_failure(crop_box "box 0" main ${IMG} 3 ${T}/first.onnx ${T}/second.onnx 200 100 230 130 -o ${OUT}/bad)
expect_failure(window "window" class-window --window 20 20 30 25 -o ${OUT}/bad)
expect_failure(window_class "out of range" class-window --class 12 -o ${OUT}/bad)

execute_process(COMMAND ${EXE} info ${M}/model.onnx RESULT_VARIABLE rc OUTPUT_VARIABLE o)
string(FIND "${o}" "split" at)
if(NOT rc EQUAL 0 OR at EQUAL -1)
  message(FATAL_ERROR "info failed: ${o}")
endif()
message(STATUS "cli: all checks passed")
